@one_node
Feature: A caller's deadline holds all the way to the worker
  A request may say when its caller stops caring: X-Request-Deadline, Unix
  time in milliseconds. The queen passes it to the worker unchanged (nothing
  downstream extends it); a deadline that passes before the answer started is
  504 REQUEST_TIMEOUT, and a worker that gets a request already late does not
  run it.

  From the original's area 340, changed: the header holds Unix milliseconds,
  not an ISO 8601 time (one integer, no time zone to parse), and a passed
  deadline is 504 (a gateway's timeout) rather than 408 (the client's). Left
  out: "the default deadline is 30 s" for control calls (it would put a 30 s
  wait into every CI run).

  Scenario: A control call whose deadline has passed is not served
    When I GET /v2/workers/list as the owner, with a deadline 1000 ms ago
    Then the answer is HTTP 504 with error REQUEST_TIMEOUT and a correlation id

  Scenario Outline: A deadline that is not Unix milliseconds is refused: <value>
    When I GET /v2/workers/list sending the header "X-Request-Deadline: <value>"
    Then the answer is HTTP 400 with error INVALID_REQUEST and a correlation id
    And the error lists the field "X-Request-Deadline" as <constraint>

    Examples:
      | value                | constraint |
      | soon                 | type       |
      | 1.5e3                | type       |
      | 2026-12-05T10:00:00Z | type       |

  Scenario: A control call within its deadline is served
    When I GET /v2/workers/list as the owner, with a deadline 30000 ms away
    Then the answer is HTTP 200

  Scenario: A task whose deadline has passed starts no worker
    When I POST /v2/tasks as the owner, with a deadline 1000 ms ago, sending {"node": "local", "model": "file:{model}", "prompt": "hi"}
    Then the answer is HTTP 504 with error REQUEST_TIMEOUT and a correlation id
    And no worker was started

  Scenario: A request deadline that passes answers REQUEST_TIMEOUT and runs nothing
    Given the worker for file:{model} on "local" is ready
    When the worker is frozen and I send a task whose deadline is 500 ms away
    Then the answer is HTTP 504 with error REQUEST_TIMEOUT and a correlation id
    And the queen gave up at the deadline
    And the worker refused the late request instead of running it
    And the worker is idle again and serves the next request
