Feature: Models on nodes
  A user names a model on the hub (hf:Org/Repo) and rbee gets it onto a node
  once, verified file by file, with progress; it refuses up front what cannot
  work, each refusal with its own error code. The hub here is a local server
  in the hub's URL layout that huggingface_hub talks to unmodified.

  Scenario: Download with progress, then list
    Given a hub that serves the tiny model as "Org/Tiny"
    And the loopback node "local" has been added
    When I run rbee-keeper --json models download --node local hf:Org/Tiny
    Then it succeeds
    And the events are start, progress up to every byte, and done
    And the model files on the node are the hub's, byte for byte
    When I run rbee-keeper models list --node local
    Then the table lists "hf:Org/Tiny" as complete

  Scenario: The node downloads for itself when its model source is the hub
    Given a hub that serves the tiny model as "Org/Tiny"
    And the loopback node "local" has been added
    When I run rbee-keeper setup update-node --name local --model-source hub
    Then it succeeds
    When I run rbee-keeper --json models download --node local hf:Org/Tiny
    Then it succeeds
    And the events are start, progress up to every byte, and done
    And the model files on the node are the hub's, byte for byte
    And nothing passed through the queen's download cache

  Scenario: A repository the hub does not have
    Given a hub that serves the tiny model as "Org/Tiny"
    And the loopback node "local" has been added
    When I run rbee-keeper models download --node local hf:Org/Missing
    Then it fails with exit code 1 and error MODEL_NOT_FOUND
    And no model is listed

  Scenario: A private repository without a token says how to set one
    Given a hub that serves the tiny model as "Org/Tiny"
    And the loopback node "local" has been added
    And the hub's "Org/Tiny" needs a token
    When I run rbee-keeper models download --node local hf:Org/Tiny
    Then it fails with exit code 1 and error HF_TOKEN_REQUIRED
    And the error mentions "RBEE_HF_TOKEN_FILE"
    And no model is listed

  Scenario: A corrupted file is caught by its hash
    Given a hub that serves the tiny model as "Org/Tiny"
    And the loopback node "local" has been added
    And the hub serves "model.safetensors" with one byte changed
    When I run rbee-keeper models download --node local hf:Org/Tiny
    Then it fails with exit code 1 and error DOWNLOAD_FAILED
    And the error mentions "hash check"
    And no model is listed
    And the node has no folder for "hf:Org/Tiny"

  Scenario: A model a worker uses cannot be removed
    Given a hub that serves the tiny model as "Org/Tiny"
    And the loopback node "local" has been added
    And "hf:Org/Tiny" has been downloaded to "local"
    When I run rbee-keeper infer --node local --model hf:Org/Tiny --prompt "hi" --max-tokens 2 --temperature 0
    Then it succeeds
    When I run rbee-keeper models remove --node local hf:Org/Tiny
    Then it fails with exit code 1 and error MODEL_IN_USE
    And the node still has the folder for "hf:Org/Tiny"
