Feature: 030 Model provisioner: downloads that never hang or double
  The original's area 030, for what is not already a scenario elsewhere:
  a download that stalls, and two requests for the same model.

  Already scenarios or tests, so not repeated here:
  - download progress events ending in done (EH 030 "downloading, complete,
    [DONE]"), hub 404 (EH-007a) and 403 with a token hint (EH-007b), a
    checksum mismatch (EH-008c): models.feature.
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
