Feature: 020 Model catalog: what the queen knows survives, and is never fetched twice
  The original's area 020 (its model catalog) and 210's F2/F8 (a corrupt
  catalog backed up, a catalog backup command). rbee's catalog is the queen's
  SQLite database: backed up after changes and at shutdown, restored when the
  file is damaged, and exported as the inventory file `setup import` reads.

  Not carried over, and why:
  - "registration INSERTs (id, provider, reference, ...)": an internal row
    layout; the user-visible part (a download lists the model, complete) is in
    030-model-provisioner.feature.
  - "filtering by provider hf returns 2 of 3 rows": rbee has one provider (hf).
  - "the GGUF file size is used for the RAM preflight": rbee loads
    safetensors, not GGUF; the RAM and VRAM checks from the weights' size are
    in 090-worker-resource-preflight.feature.
  - "a miss triggers a download" is 030-model-provisioner.feature's first scenario.

  Scenario: A model already on the node is not downloaded again
    Given a hub that serves the tiny model as "Org/Tiny"
    And the loopback node "local" has been added
    And "hf:Org/Tiny" has been downloaded to "local"
    When I run rbee-keeper models download --node local hf:Org/Tiny
    Then it succeeds
    And the hub sent the weights once

  Scenario: A damaged database is set aside and the newest backup restored
    Given the loopback node "local" has been added
    When the queen stops and its database file is damaged
    And I run rbee-keeper nodes status
    Then it succeeds
    And the error mentions "backup"
    And the node list shows "local" as reachable
    And the damaged file was kept beside the database

  Scenario: The inventory exported is what import reads
    Given the loopback node "local" has been added
    When I run rbee-keeper setup export {home}/fleet.toml
    Then it succeeds
    And the inventory file "fleet.toml" names the node "local" and no secret
