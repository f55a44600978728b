@one_node
Feature: The whole stack through the OpenAI-compatible door
  An OpenAI client pointed at the queen's /v1 with the queen's token uses the
  model catalog: it lists the served models, completes text, and is routed to
  a node of the model without naming one; its errors come in OpenAI's shape.
  (The chat stream is area 130's.)

  From the original's area 910, left out: "1000 requests in 60 s" and "a
  10-minute stability run" (load belongs in bench/, docs/benchmarks.md), "two
  hives on 9200 and 9201" (area 920 runs several test hosts), and "DB
  corruption with an in-memory fallback" (rbee restores the newest backup
  instead, area 330).

  Scenario: The catalog's models are the OpenAI model list
    Given the model "tiny-text" in the catalog, served on "local"
    When I GET /v1/models as the owner
    Then the answer is HTTP 200
    And the OpenAI model list has "tiny-text"

  Scenario: A text completion, not streamed, with its usage
    Given the model "tiny-text" in the catalog, served on "local"
    When I POST /v1/completions as the owner with {"model": "tiny-text", "prompt": "Once upon a time", "max_tokens": 6, "temperature": 0}
    Then the answer is HTTP 200
    And the answer's JSON has "object" set to "text_completion"
    And the answer's JSON has "choices.0.finish_reason" set to "length"
    And the answer's JSON has "usage.completion_tokens" set to 6

  Scenario: A task for a catalog name needs no node
    Given the model "tiny-text" in the catalog, served on "local"
    When I POST /v2/tasks as the owner with {"model": "tiny-text", "prompt": "hi", "max_tokens": 3}
    Then the answer is HTTP 200
    And the task's stream ended after 3 tokens

  Scenario: An unknown model is an OpenAI-shaped 404
    When I POST /v1/completions as the owner with {"model": "no-such-model", "prompt": "hi"}
    Then the answer is HTTP 404
    And the answer's JSON has "error.code" set to "model_not_found"
    And the answer's JSON has "error.type" set to "invalid_request_error"
