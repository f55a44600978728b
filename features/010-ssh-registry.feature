@one_queen
Feature: Registering the nodes of the fleet
  A user registers GPU machines that the queen reaches over SSH. Every node is
  connected to and probed before it is recorded, and every failure is one
  clear line that leaves the inventory untouched. (One queen for the feature:
  each scenario uses its own node names.)

  From the original's area 010, changed: the original retried an unreachable
  host 3 times with back-off before saving nothing; here the first refused
  connection fails at once (NODE_UNREACHABLE), and the health loop, not
  add-node, keeps trying a registered node. "A missing key file fails before
  any call to the queen" is in area 150, where no queen runs.

  Scenario: An unknown host key is refused with its fingerprint
    # First in the feature: the scenarios after it accept the node's key.
    When I add the loopback node "gpu-new-key" without accepting its host key
    Then it fails with exit code 1 and error HOST_KEY_UNKNOWN
    And the error mentions "SHA256:"
    And the node list has no "gpu-new-key"

  Scenario: Add, list and remove a node
    When I add the loopback node "gpu1" accepting its host key
    Then it succeeds
    And the node list shows "gpu1" as reachable
    When I run rbee-keeper setup list-nodes
    Then the table output lists "gpu1" with its SSH target
    When I run rbee-keeper setup remove-node --name gpu1
    Then it succeeds
    And the node list has no "gpu1"

  Scenario: A registered node records when it was last reached
    When I add the loopback node "gpu-seen" accepting its host key
    Then it succeeds
    And the node "gpu-seen" was last connected just now and has no error

  Scenario: A duplicate name is refused, not overwritten
    Given the loopback node "gpu-dup" has been added
    When I add the loopback node "gpu-dup" accepting its host key
    Then it fails with exit code 1 and error NODE_ALREADY_EXISTS
    And the error mentions "remove-node"

  Scenario: An unreachable host fails fast
    When I run rbee-keeper setup add-node --name gpu-gone --ssh-host 127.0.0.1 --ssh-port {free_port} --ssh-user {user} --ssh-key {key} --install-path /tmp/x --accept-new-host-key
    Then it fails with exit code 1 and error NODE_UNREACHABLE
    And the node list has no "gpu-gone"

  Scenario: A key the node does not accept is refused by the node
    Given a fresh SSH key "stranger" the node has never seen
    When I run rbee-keeper setup add-node --name gpu-stranger --ssh-host 127.0.0.1 --ssh-port {port} --ssh-user {user} --ssh-key {home}/stranger --install-path {install} --accept-new-host-key
    Then it fails with exit code 1 and error SSH_AUTH_FAILED
    And the node list has no "gpu-stranger"

  Scenario: A private key others can read is refused, with the fix
    Given a copy of the node's key at "{home}/loose-key" with mode 0644
    When I run rbee-keeper setup add-node --name gpu-loose --ssh-host 127.0.0.1 --ssh-port {port} --ssh-user {user} --ssh-key {home}/loose-key --install-path {install} --accept-new-host-key
    Then it fails with exit code 1 and error SSH_KEY_INSECURE
    And the error mentions "chmod 600"
    And the node list has no "gpu-loose"

  Scenario: Removing a node that does not exist
    When I run rbee-keeper setup remove-node --name ghost
    Then it fails with exit code 1 and error NODE_NOT_FOUND

  Scenario: Inference on a node that is not registered
    When I run rbee-keeper infer --node ghost --model file:{model} --prompt "hi"
    Then it fails with exit code 1 and error NODE_NOT_FOUND
    And the error mentions "ghost"

  Scenario: A node's settings can be changed without removing it
    Given the loopback node "gpu-upd" has been added
    When I run rbee-keeper setup update-node --name gpu-upd --model-source hub
    Then it succeeds
    And the node "gpu-upd" has model_source "hub"

  Scenario: Bad input is rejected with usage exit code
    When I run rbee-keeper setup add-node --name gpu1
    Then it fails with a usage message naming "--ssh-host"
