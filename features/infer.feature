Feature: Streaming inference on a node
  `rbee-keeper infer` starts a worker on the node when none serves the model
  (cold), reuses it afterwards (warm), and prints tokens as they are made.

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

  Scenario: Inference on an unknown node
    When I run rbee-keeper infer --node ghost --model file:{model} --prompt "hi"
    Then it fails with exit code 1 and error NODE_NOT_FOUND

  Scenario: A model path that does not exist
    When I run rbee-keeper infer --node local --model file:/no/such/model --prompt "hi"
    Then it fails with exit code 1 and error MODEL_NOT_FOUND
