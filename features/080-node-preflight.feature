@one_node
Feature: What a node has, asked over SSH
  `nodes status` probes every node at once through its helper: python, CPUs,
  RAM, disk, backends and GPUs (through NVML or nvidia-smi, none here). One
  node's failure is its own entry and never hides the others.

  From the original's area 080, changed: the original asked a hive daemon's
  /v1/health (and its version) over HTTP; rbee has no daemon on the node, and
  the helper it uploads is the queen's own code, content-addressed, so there
  is no version to mismatch: a changed helper is uploaded anew. Its "RAM of at
  least 8 GB and 50 GB of disk" are not fixed minimums here: each worker is
  checked against its own model's needs (area 090); add-node asks for 2 GiB
  of disk (area 070).

  Scenario: The status of a node lists what it has
    When I run rbee-keeper --json nodes status --node local
    Then it succeeds
    And the node "local" is reachable with python 3.10 or newer
    And it reports CPUs, RAM, free disk and the cpu backend
    And it reports no GPU, found by nothing

  Scenario: The keeper shows the status as a table
    When I run rbee-keeper nodes status
    Then it succeeds
    And the output mentions "local"
    And the output mentions "reachable"

  Scenario: A node whose sshd stopped is unreachable; the others still answer
    Given a second sshd, registered as the node "brief"
    When its sshd stops
    And I run rbee-keeper --json nodes status
    Then it succeeds
    And the node "brief" is unreachable with an error code
    And the node "local" is reachable with python 3.10 or newer
    When I run rbee-keeper setup remove-node --name brief
    Then it succeeds

  Scenario: The status of a node that does not exist
    When I run rbee-keeper nodes status --node ghost
    Then it fails with exit code 1 and error NODE_NOT_FOUND

  Scenario: The helper lives in a content-addressed folder, marked complete
    When I run rbee-keeper nodes status --node local
    Then it succeeds
    And the node's install path holds one helper folder, marked complete
