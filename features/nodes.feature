Feature: Managing the nodes of the fleet
  A user registers GPU machines ("hives") that the queen reaches over SSH.
  Every node is connected to and probed before it is recorded, and every
  failure is one clear line that leaves the inventory untouched.

  Scenario: Add, list and remove a node
    When I add the loopback node "gpu1" accepting its host key
    Then it succeeds
    And the node list shows "gpu1" as reachable
    When I run rbee-keeper setup list-nodes
    Then the table output lists "gpu1" with its SSH target
    When I run rbee-keeper setup remove-node --name gpu1
    Then it succeeds
    And the node list is empty

  Scenario: A duplicate name is refused, not overwritten
    Given the loopback node "gpu1" has been added
    When I add the loopback node "gpu1" accepting its host key
    Then it fails with exit code 1 and error NODE_ALREADY_EXISTS
    And the error mentions "remove-node"

  Scenario: A missing key file fails before any network call
    When I run rbee-keeper setup add-node --name gpu1 --ssh-host 127.0.0.1 --ssh-user x --ssh-key {home}/no-such-key --install-path /tmp/x
    Then it fails with exit code 1 and error SSH_KEY_NOT_FOUND
    And no queen was started

  Scenario: An unknown host key is refused with its fingerprint
    When I add the loopback node "gpu1" without accepting its host key
    Then it fails with exit code 1 and error HOST_KEY_UNKNOWN
    And the error mentions "SHA256:"
    And the node list is empty

  Scenario: An unreachable host fails fast
    When I run rbee-keeper setup add-node --name gpu1 --ssh-host 127.0.0.1 --ssh-port {free_port} --ssh-user {user} --ssh-key {key} --install-path /tmp/x --accept-new-host-key
    Then it fails with exit code 1 and error NODE_UNREACHABLE
    And the node list is empty

  Scenario: Removing a node that does not exist
    When I run rbee-keeper setup remove-node --name ghost
    Then it fails with exit code 1 and error NODE_NOT_FOUND

  Scenario: Bad input is rejected with usage exit code
    When I run rbee-keeper setup add-node --name gpu1
    Then it fails with a usage message naming "--ssh-host"
