Feature: From a prompt to tokens and back to an idle fleet
  `rbee-keeper infer` starts a worker on the node when none serves the model
  (cold), reuses it afterwards (warm), and prints tokens as they are made.

  From the original's area 160: the cold start's chain (SSH to the node, the
  helper started, an empty worker list, preflight, spawn, readiness, tokens,
  the worker idle again) runs for real below. The original's warm start "in
  under 5 s" is a timing: bench/first_token.py measures it (docs/benchmarks.md).

  Background:
    Given the loopback node "local" has been added

  Scenario: Cold then warm inference, then the worker is shut down
    When I run rbee-keeper infer --node local --model file:{model} --prompt "hello" --max-tokens 16 --temperature 0
    Then tokens were printed and a summary with stop reason MAX_TOKENS
    And one worker is idle on node "local"
    When I run rbee-keeper infer --node local --model file:{model} --prompt "hello again" --max-tokens 8 --temperature 0.7 --seed 7 --json
    Then the JSON events are started, text pieces in order, and an end after 8 tokens
    And the same worker answered
    When I shut that worker down
    Then it succeeds
    And no worker is listed and its process is gone
