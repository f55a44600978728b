Feature: More requests than slots, and requests at the same moment
  A request that finds every slot of its model busy waits in the model's queue
  (first in, first out within an API key, keys in turn) instead of failing;
  beyond the queue's bound it gets 429 with Retry-After, which OpenAI clients
  retry by themselves. Simultaneous changes of the inventory do not race.

  From the original's area 200, adapted: C1 (three simultaneous registrations
  of one worker, one wins, two 409) becomes three simultaneous adds of one node
  (workers do not register here: the queen starts them over SSH and records
  them itself). Dropped: C2 (concurrent PATCHes of a worker's state, last write
  wins; there is no PATCH: a worker's state is the queen's own record, changed
  by one event loop) and C6/C7 (cleanup and heartbeats under an RwLock; there
  are no heartbeats, the supervisor polls each worker's /health).

  Background:
    Given the loopback node "local" has been added

  Scenario: Requests beyond the slots wait their turn and are served in arrival order
    Given a long job holds the only slot of the worker for file:{model} on "local"
    When 6 more tasks for file:{model} on "local" arrive one after another
    Then the queue holds 6 requests
    When the worker runs again
    Then the long job and all 6 tasks end with their tokens
    And the 6 tasks were served in the order they arrived
    And the queue holds 0 requests

  Scenario: A full queue answers 429 with Retry-After
    Given the request queue holds at most 1 request
    And a long job holds the only slot of the worker for file:{model} on "local"
    And 1 more task for file:{model} on "local" waits in the queue
    When I ask the OpenAI route for a completion of file:{model} on "local"
    Then the answer is HTTP 429
    And the answer has the header "Retry-After" set to "1"
    And its error code is "queue_full"
    When the worker runs again
    Then the long job and all 1 tasks end with their tokens

  Scenario: Three simultaneous adds of one node: one succeeds, two conflict
    When three clients add the same loopback node at once
    Then one add succeeds and two get NODE_ALREADY_EXISTS
    And the node is listed once
