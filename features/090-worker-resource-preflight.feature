Feature: Nothing starts that cannot fit
  Before a worker is spawned the queen checks what it needs against what the
  node has: RAM for a CPU worker (weights x 1.2), a GPU that exists, is not too
  hot and has the memory, and disk for a download. Each refusal has its own
  code and the figures, and nothing is left started.

  From the original's area 090, elsewhere: "the worker is OOM-killed while
  loading" (WORKER_OOM under a worker's memory bound, area 230). Left out:
  "CUDA drivers missing" as a separate case (a node without a working
  driver has no GPU in its probe, which is the BACKEND_UNAVAILABLE below; a
  worker that finds its GPU stack unusable fails its load with the same code,
  tests/test_exllamav2_unusable_worker.py). No GPU here: the GPU checks read
  nvidia-smi answers written in its CSV format.

  Scenario: Not enough disk on the node for the download
    Given a hub that serves the tiny model as "Org/Tiny"
    And the loopback node "local" has been added
    And the hub declares "model.safetensors" of "Org/Tiny" as 1000000000000000000 bytes
    When I run rbee-keeper models download --node local hf:Org/Tiny
    Then it fails with exit code 1 and error INSUFFICIENT_DISK
    And no model is listed

  Scenario: Not enough RAM for a CPU worker
    Given the loopback node "local" has been added
    And a model folder whose weights claim 1 TiB
    When I run rbee-keeper infer --node local --model file:{home}/huge --prompt "hi"
    Then it fails with exit code 1 and error INSUFFICIENT_RAM
    And no worker was started
    When I POST /v2/tasks as the owner with {"node": "local", "model": "file:{home}/huge", "prompt": "hi"}
    Then the answer is HTTP 507 with error INSUFFICIENT_RAM and a correlation id
    And the error's details need more bytes than the node has

  Scenario: A CUDA worker on a node without a GPU, or on a GPU it lacks
    # The loopback node has no GPU: its probe finds neither NVML nor nvidia-smi.
    Given the loopback node "local" has been added
    When I run rbee-keeper infer --node local --model file:{model} --prompt "hi" --backend cuda
    Then it fails with exit code 1 and error BACKEND_UNAVAILABLE
    When I run rbee-keeper infer --node local --model file:{model} --prompt "hi" --backend cuda --device 5
    Then it fails with exit code 1 and error BACKEND_UNAVAILABLE
    And no worker was started

  Scenario Outline: GPU checks before a CUDA worker, read from nvidia-smi answers
    # No GPU here: nvidia-smi answers written in its CSV format stand in for the node's cards,
    # parsed by the helper's own parser and checked by the queen's preflight.
    Given a node whose nvidia-smi printed "<recording>"
    When a CUDA worker for a <gib> GiB model asks for "<device>" with a limit of <limit> C
    Then it is refused with <code>

    Examples:
      | recording            | gib | device | limit | code                |
      | none.txt             | 1   | cuda   | 85    | BACKEND_UNAVAILABLE |
      | 1x-h100.csv          | 1   | cuda:1 | 85    | BACKEND_UNAVAILABLE |
      | 2x-rtx3090.csv       | 1   | cuda:1 | 60    | GPU_TOO_HOT         |
      | 2x-rtx3090.csv       | 10  | cuda:1 | 85    | INSUFFICIENT_VRAM   |
      | mixed-4090-3060.csv  | 12  | cuda   | 85    | INSUFFICIENT_VRAM   |
