@one_queen
Feature: Errors a person and a program can act on
  Every error, on every route, is one JSON envelope: a code in UPPER_SNAKE_CASE,
  a one-line message, details, and the request's correlation id (also in the
  x-correlation-id header and on every log line the request wrote). The keeper
  prints it as one line, "error: [CODE] message", and exits 1; bad usage exits 2.

  From the original's area 320, left out: "no unwrap() in production code" (a
  Rust rule; here ruff and mypy run on every commit, and every uncaught
  exception still becomes a 500 envelope), "503 when the database is down" (area
  330's, the state of the queen) and "a worker is removed only after 3 failed
  health checks" (area 110). "INSUFFICIENT_RESOURCES with required and
  available" is area 090's.

  Scenario: Every answer carries a correlation id, and a caller may choose it
    When I GET /v2/workers/list sending the header "x-correlation-id: my-trace-0001"
    Then the answer is HTTP 200
    And the answer has the header "x-correlation-id" set to "my-trace-0001"

  Scenario Outline: <what> answers <status> <code> in the envelope
    When I <method> <path> as the owner with <body>
    Then the answer is HTTP <status> with error <code> and a correlation id
    And the error's message is one line without a traceback

    Examples:
      | what                   | method | path                          | body                                                    | status | code             |
      | a bad field            | POST   | /v2/tasks                     | {"node": "local", "prompt": "hi"}                       | 400    | INVALID_REQUEST  |
      | an unknown node        | POST   | /v2/registry/beehives/remove  | {"node_name": "ghost"}                                  | 404    | NODE_NOT_FOUND   |
      | an unknown worker      | POST   | /v2/workers/shutdown          | {"worker_id": "w-ghost"}                                | 404    | WORKER_NOT_FOUND |
      | an unknown catalog name| POST   | /v2/tasks                     | {"model": "no-such-model", "prompt": "hi"}              | 404    | MODEL_NOT_FOUND  |
      | an unknown route       | POST   | /v2/no-such-route             | {}                                                      | 404    | NOT_FOUND        |
      | a wrong method         | DELETE | /v2/workers/list              | {}                                                      | 405    | METHOD_NOT_ALLOWED |
      | a missing key file     | POST   | /v2/registry/beehives/add     | {"node_name": "n1", "ssh_host": "127.0.0.1", "ssh_user": "u", "ssh_key_path": "{home}/no-key"} | 400 | SSH_KEY_NOT_FOUND |

  Scenario: A correlation id that is not plain is replaced, not echoed
    When I GET /v2/workers/list sending the header "x-correlation-id: bad id; rm -rf"
    Then the answer is HTTP 200
    And the answer's correlation id is one the queen made

  Scenario: The correlation id of a refused request is on the queen's log line for it
    When I call GET /v2/workers/list with the unknown token "a-token-nobody-issued-0123"
    Then the answer is HTTP 401 with error INVALID_API_KEY and a correlation id
    And the queen's log has a line with the answer's correlation id

  Scenario: An error never echoes the token it was sent with
    When I POST /v2/tasks as the owner with {"node": "{token}", "model": "x;{token}", "prompt": "hi"}
    Then the answer is HTTP 400 with error INVALID_REQUEST and a correlation id
    And the answer does not contain "{token}"

  Scenario: A request whose headers are too large is refused with 431
    When I GET /v2/workers/list with 70 KB of headers
    Then the answer is HTTP 431 with error HEADERS_TOO_LARGE and a correlation id

  Scenario: A queen error is one line from the keeper, with exit code 1
    When I run rbee-keeper workers shutdown --id w-ghost
    Then it fails with exit code 1 and error WORKER_NOT_FOUND

  Scenario: A queen that cannot be reached is one line too
    When I run rbee-keeper --queen-url http://queen.invalid:8080 workers list
    Then it fails with exit code 1 and error QUEEN_UNAVAILABLE

  Scenario: A keeper command with a missing argument prints its usage and exits 2
    When I run rbee-keeper workers shutdown
    Then it fails with a usage message naming "--id"

  Scenario: With --json the error is still one line on stderr, stdout stays clean
    When I run rbee-keeper --json workers shutdown --id w-ghost
    Then it fails with exit code 1 and error WORKER_NOT_FOUND
    And nothing was printed on stdout
