@one_node @env.RBEE_SUPERVISOR_INTERVAL=0.5 @env.RBEE_WORKER_STOP_GRACE=4 @env.RBEE_RESTART_BASE_DELAY=0.2
Feature: Workers that look after themselves
  The queen's supervisor asks each worker's process and /health every
  interval: a dead worker is killed (its whole process group) and restarted
  with the same id after a short back-off; a stop drains the worker, sends
  SIGTERM, and SIGKILL once the grace is over, and says whether it had to
  force. (This feature checks every 0.5 s, restarts after 0.2 s and gives a
  stop 4 s of grace, where the defaults are 30 s, 1 s and 10 s.)

  The original's area 110 is the hive daemon's lifecycle. rbee has no daemon
  on the node: the queen's supervisor does its work over SSH, and the helper
  exits when its SSH session ends (area 120). Left out: "a worker idle for 5
  minutes is stopped" (area 120 runs it with a queen of its own, since the idle
  stop would take this feature's worker between scenarios), "parallel shutdown
  of 5 workers within 15 s" (a timing, for bench/) and "progress logs 1/4 ...
  4/4 workers stopped" (the answer counts graceful, forced and failed stops
  instead). The circuit after 5 failures is tests/test_restart_policy.py's.

  Scenario: A stop that the worker honours is graceful
    Given the worker for file:{model} on "local" is ready
    When I shut down the worker through the API
    Then the answer says it stopped without force
    And its process is gone

  Scenario: A worker that ignores SIGTERM is killed once the grace is over
    Given the worker for file:{model} on "local" is ready
    When the worker is frozen so it cannot act on SIGTERM
    And I shut down the worker through the API
    Then the answer says it stopped with force
    And its process is gone

  Scenario: A worker that dies is restarted with the same id
    Given the worker for file:{model} on "local" is ready
    When the worker's process is killed with SIGKILL
    Then within 30 seconds the worker is idle again under the same id, in a new process
    And its history shows it failed, was restarted and became idle again
    And the worker is idle again and serves the next request
