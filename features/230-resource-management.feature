@one_node @env.RBEE_WORKER_MEMORY_LIMIT_MIB=100
Feature: A worker's memory is bounded, and an OOM is named as one
  Each worker runs under a memory bound on its node (a memory cgroup the
  helper makes below its own, else an address-space limit for a CPU worker).
  When the kernel's OOM killer ends it, the queen reads the group's own OOM
  counter, not a guess from SIGKILL, and says WORKER_OOM with the figures; the
  next start of that model on that node gets a bound 1.5 times larger, so an
  OOM never repeats at the same size, not even after the queen restarts (the
  raised bound is kept in its database). Here the bound is 100 MiB, which the
  tiny model's worker (python and torch) cannot load in.

  From the original's area 230: R1 (the GPU with the most free VRAM is chosen),
  R2 (free RAM checked before a start) and R3 (a GPU over its temperature
  limit is GPU_TOO_HOT) are area 090's scenarios. Dropped: R4 (CPU workers
  pinned to cores; rbee leaves placement to the kernel, and one worker per
  model and device has no cores to share out), R5 (VRAM_FRAGMENTED; neither
  NVML nor nvidia-smi report fragmentation, and a load that does not fit
  ends in INSUFFICIENT_VRAM from the worker itself), R6 (downloads throttled
  to 10 MB/s; no such setting, a download is bounded by its stall limit) and
  R7 (a warning on I/O saturation; nothing in rbee measures I/O).

  Scenario: A worker over its memory bound is WORKER_OOM once; its next start gets more, also after a restart
    Given the node can give a worker a memory cgroup
    When I POST /v2/tasks as the owner with {"node": "local", "model": "file:{model}", "prompt": "hi"}
    Then the answer is HTTP 502 with error WORKER_OOM and a correlation id
    And the error says the worker ran under 100 MiB and its next start gets 150 MiB
    And the worker's history has one failure naming the OOM killer and no restart
    And the audit log has one worker.oom entry for that worker
    And no worker was started
    When I POST /v2/tasks as the owner with {"node": "local", "model": "file:{model}", "prompt": "hi"}
    Then the answer is HTTP 502 with error WORKER_OOM and a correlation id
    And the error says the worker ran under 150 MiB and its next start gets 225 MiB
    And the queen counts 2 OOM kills in rbee_worker_ooms_total
    When the queen restarts
    And I POST /v2/tasks as the owner with {"node": "local", "model": "file:{model}", "prompt": "hi"}
    Then the newest worker ran under 225 MiB, raised after an OOM kill
