Feature: 030 Model provisioner: downloads verified, resumed, never hung or doubled
  The original's area 030. A user names a model on the hub (hf:Org/Repo) and
  rbee gets it onto a node once, verified file by file, with progress; it
  refuses up front what cannot work, each refusal with its own error code. The
  hub here is a local server in the hub's URL layout that huggingface_hub
  talks to unmodified.

  Already scenarios or tests, so not repeated here:
  - download progress events ending in done (EH 030 "downloading, complete,
    [DONE]"), hub 404 (EH-007a) and 403 with a token hint (EH-007b), a
    checksum mismatch (EH-008c): the scenarios at the end of this file.
  - a connection reset resumes from its last byte (EH-008b/EC2):
    tests/test_models_resume.py; a disk that fills mid-download
    (INSUFFICIENT_DISK, the partial file kept): tests/test_downloads.py, as it
    needs a size-limited file system mounted for the queen's cache.
  Not carried over, and why:
  - "after 6 attempts ... with retries from 100 ms": a dropped connection that
    still brought bytes is retried at once from where it stopped; one that
    brings nothing ends the run, and the next run resumes.
  - GGUF metadata and the Q4_K_M/Q5_K_M/Q8_0 formats: rbee loads safetensors.

  Scenario: A download that stalls ends in DOWNLOAD_TIMEOUT and resumes later
    Given a hub that serves the tiny model as "Org/Tiny"
    And the queen gives up on a download that sends nothing for 1 second
    And the hub holds the second half of "model.safetensors" for 3 seconds
    And the loopback node "local" has been added
    When I run rbee-keeper models download --node local hf:Org/Tiny
    Then it fails with exit code 1 and error DOWNLOAD_TIMEOUT
    And the queen's download cache keeps the first half of the weights
    When the hub sends at full speed again
    And I run rbee-keeper models download --node local hf:Org/Tiny
    Then it succeeds
    And the hub was asked only for the second half

  Scenario: A second download of the same model joins the first
    Given a hub that serves the tiny model as "Org/Tiny"
    And the hub holds the second half of "model.safetensors" for 1.5 seconds
    And the loopback node "local" has been added
    When two clients download "hf:Org/Tiny" to "local" at the same time
    Then both succeed, each seeing the progress up to every byte
    And the hub sent the weights once

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
