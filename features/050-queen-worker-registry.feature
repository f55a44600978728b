@one_node
Feature: The queen's register of workers
  The queen knows every worker it started: where it runs, what it serves, its
  state and its whole history. Clients read it (workers list, a worker's
  events) and stop workers through it; no worker registers itself.

  From the original's area 050, left out: "a worker registers with POST 201"
  (rbee's workers never call the queen: the queen starts them and watches
  them), "PATCH state busy" (a worker's state is the queen's own, set as
  streams open and close) and "no heartbeat for 120 s removes a worker"
  (the supervisor asks each worker; a dead one is noticed at the next check,
  area 110). DELETE is `workers shutdown` below.

  Scenario: A started worker is listed with where it runs and what it serves
    Given the worker for file:{model} on "local" is ready
    When I GET /v2/workers/list as the owner
    Then the answer is HTTP 200
    And the one worker listed is idle on "local" serving file:{model} with torch on the CPU
    And its pid is a live worker process on the node

  Scenario: A second request for the same model goes to the same worker
    Given the worker for file:{model} on "local" is ready
    When I run rbee-keeper infer --node local --model file:{model} --prompt "again" --max-tokens 2 --temperature 0
    Then it succeeds
    And the same worker answered

  Scenario: The keeper shows the worker in a table
    Given the worker for file:{model} on "local" is ready
    When I run rbee-keeper workers list
    Then it succeeds
    And the output mentions the worker's id and "idle"

  Scenario: A worker's history lists every state it went through, with reasons
    Given the worker for file:{model} on "local" is ready
    When I ask for the worker's history
    Then the answer is HTTP 200
    And its states went spawning, loading, idle in that order
    And every change has a time and a reason

  Scenario: The events of a worker that never existed
    When I GET /v2/workers/w-never-was/events as the owner
    Then the answer is HTTP 404 with error WORKER_NOT_FOUND and a correlation id

  Scenario: A stopped worker leaves the list but stays in the full list
    Given the worker for file:{model} on "local" is ready
    When I shut that worker down
    Then it succeeds
    And no worker is listed and its process is gone
    When I GET /v2/workers/list?all=1 as the owner
    Then the worker is listed as stopped
