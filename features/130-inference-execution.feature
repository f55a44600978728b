Feature: Inference a client can rely on
  Sampling that does what it says, a busy worker that says so, cancellation,
  a bounded request size and the OpenAI-compatible stream, all on a real
  queen, a real worker and the tiny model behind a real sshd.

  From the original's area 130, changed: a worker that dies mid-stream ends the
  stream with an error event WORKER_DIED (area 110), not a partial-output temp
  file; a stall and a lost connection are the supervisor's "hung" and the SSH
  keepalive's NODE_UNREACHABLE (920). Ctrl-C in the keeper (exit 130) closes
  the stream, which cancels the job as below; there is no DELETE route to call.
  Deadlines are area 340.

  Background:
    Given the loopback node "local" has been added

  Scenario: A stop sequence ends the text just before it
    When I run rbee-keeper infer --node local --model file:{model} --prompt "Once upon a time" --max-tokens 24 --temperature 0 --json
    Then it succeeds
    When I run the same prompt again, stopping at a piece of that text
    Then the stream ends with stop reason STOP_SEQUENCE naming that piece
    And the text is the first text up to just before that piece

  Scenario: Greedy decoding and a fixed seed give the same text every time
    When I run rbee-keeper infer --node local --model file:{model} --prompt "hello" --max-tokens 16 --temperature 0 --json
    And I run it once more, remembering both texts
    Then both texts are the same and not empty
    When I run rbee-keeper infer --node local --model file:{model} --prompt "hello" --max-tokens 16 --temperature 1.2 --seed 7 --json
    And I run it once more, remembering both texts
    Then both texts are the same and not empty

  Scenario: Every slot busy: retried after 1, 2 and 4 s, then exit 1
    # With the request queue on (the default) the request would wait its turn
    # instead: 200-concurrency.feature.
    Given the request queue holds at most 0 requests
    And a long job holds the only slot of the worker for file:{model} on "local"
    When I run rbee-keeper infer --node local --model file:{model} --prompt "hi"
    Then it fails with exit code 1 and error ALL_SLOTS_BUSY
    And it retried after 1, 2 and 4 seconds first
    And the long job still finishes once its worker runs again

  Scenario: A client that goes away cancels its job on the worker
    Given the worker for file:{model} on "local" is ready
    When a client starts a 2048-token task and leaves after the first tokens
    Then the worker ends that job with stop reason CANCELLED well short of 2048 tokens
    And the worker is idle again and serves the next request

  Scenario: A request body over 1 MB is refused with 413
    When I post a 1.1 MB prompt to /v2/tasks
    Then the answer is HTTP 413 with error PAYLOAD_TOO_LARGE and a correlation id
    And no worker was started

  Scenario: The OpenAI chat completions stream
    Given the model "tiny-chat" in the catalog, served on "local" with a chat template
    When I stream a chat completion from "tiny-chat" with at most 12 tokens
    Then the chunks are chat.completion.chunk with the role first and text after
    And the last chunk has finish_reason "length", then usage, then [DONE]
    And the streamed text is the same as the non-streamed answer

  Scenario: A model path that does not exist
    When I run rbee-keeper infer --node local --model file:/no/such/model --prompt "hi"
    Then it fails with exit code 1 and error MODEL_NOT_FOUND
