@one_node
Feature: One request, followed end to end
  A client's request carries its correlation id from the queen's answer to the
  worker's log line for the job, and the token stream arrives whole, with the
  usage figures, however the client reads it.

  From the original's area 900, left out: "failover to a second worker within
  5 s" (tests/test_failover.py kills a worker as it takes a request; a timing
  in a scenario would be one more flaky number), "SSE backpressure" (what a
  slow reader sees depends on socket buffers, not on rbee) and "a JWT auth chain" (rbee has bearer tokens: the owner's, named keys, and
  one per worker, area 300 and 100). "Cascading shutdown" is area 120's.

  Scenario: The correlation id a client chose is on the worker's log line for its job
    Given the worker for file:{model} on "local" is ready
    When I send a task with the correlation id "trace-e2e-0001"
    Then the answer has the header "x-correlation-id" set to "trace-e2e-0001"
    And the stream ended with MAX_TOKENS and [DONE]
    And the worker's log has the job with cid=trace-e2e-0001

  Scenario: The usage figures add up
    Given the worker for file:{model} on "local" is ready
    When I send a task with the correlation id "trace-e2e-0002"
    Then the stream ended with MAX_TOKENS and [DONE]
    And the end event's usage counts the prompt and 5 completion tokens
