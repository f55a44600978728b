"""Steps for inference behaviours: sampling, busy slots, cancellation, deadlines,
body size and the OpenAI stream, against the queen the keeper started."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
from behave import given, then, when
from behave.runner import Context

CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
FINISHED = re.compile(r"job (\S+) cid=\S+ finished: stop_reason=(\w+) .*tokens_out=(\d+)")


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    total_s: float


def run_keeper(context: Context, args: list[str]) -> Run:
    """rbee-keeper as a real process (keeper_steps has the general step)."""
    started = time.monotonic()
    argv = [sys.executable, "-m", "rbee_keeper", *args]
    proc = subprocess.run(argv, env=context.env, capture_output=True, text=True, timeout=300)
    return Run(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


def expand(context: Context, text: str) -> str:
    return text.replace("{model}", str(context.model_dir))


def queen(context: Context) -> httpx.Client:
    token = (context.home / "api-token").read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.Client(base_url=context.queen_url, headers=headers, timeout=120)


def events_of(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["t"] for e in events if e["type"] == "token")


def sse_events(lines: Any) -> list[dict[str, Any]]:
    out = []
    for line in lines:
        if line.startswith("data: "):
            data = line[len("data: ") :]
            out.append({"type": "DONE"} if data == "[DONE]" else json.loads(data))
    return out


def the_worker(context: Context) -> dict[str, Any]:
    with queen(context) as c:
        (worker,) = c.get("/v2/workers/list").json()["workers"]
    return dict(worker)


def worker_log(context: Context, worker_id: str) -> str:
    with queen(context) as c:
        r = c.get("/v2/logs", params={"worker_id": worker_id, "lines": 500})
    assert r.status_code == 200, r.text
    return "\n".join(r.json()["lines"])


def task(ref: str, node: str, **extra: Any) -> dict[str, Any]:
    return {"node": node, "model": ref, "prompt": "Once upon a time", **extra}


# --- stop sequence and determinism -------------------------------------------------


@when("I run the same prompt again, stopping at a piece of that text")
def step_stop_at_piece(context: Context) -> None:
    first = text_of(events_of(context.result.stdout))
    context.first_text = first
    # A piece from the middle, without spaces at its ends (argv and the shell keep
    # them, but a reader of the scenario would not see them).
    middle = len(first) // 2
    piece = first[middle : middle + 3].strip()
    assert piece, f"no text to stop at: {first!r}"
    context.stop_piece = piece
    context.result = run_keeper(context, [*context.last_args, f"--stop={piece}"])
    assert context.result.code == 0, context.result.stderr


@then("the stream ends with stop reason STOP_SEQUENCE naming that piece")
def step_stop_sequence(context: Context) -> None:
    end = events_of(context.result.stdout)[-1]
    assert end["type"] == "end", end
    assert end["stop_reason"] == "STOP_SEQUENCE", end
    assert end["stop_sequence_matched"] == context.stop_piece, end


@then("the text is the first text up to just before that piece")
def step_text_before_stop(context: Context) -> None:
    text = text_of(events_of(context.result.stdout))
    expected = context.first_text[: context.first_text.index(context.stop_piece)]
    assert text == expected, (text, expected)
    assert context.stop_piece not in text


@when("I run it once more, remembering both texts")
def step_run_again(context: Context) -> None:
    first = context.result
    assert first.code == 0, first.stderr
    again = run_keeper(context, context.last_args)
    assert again.code == 0, again.stderr
    context.texts = [text_of(events_of(first.stdout)), text_of(events_of(again.stdout))]


@then("both texts are the same and not empty")
def step_same_texts(context: Context) -> None:
    first, second = context.texts
    assert first, "no text came back"
    assert first == second, (first, second)


# --- a busy slot -------------------------------------------------------------------


def ensure_worker(context: Context, ref: str, node: str) -> dict[str, Any]:
    with queen(context) as c:
        r = c.post("/v2/tasks", json=task(ref, node, max_tokens=1))
    assert r.status_code == 200 and '"type": "end"' in r.text, r.text
    return the_worker(context)


@given('the worker for {ref} on "{node}" is ready')
def step_worker_ready(context: Context, ref: str, node: str) -> None:
    context.worker = ensure_worker(context, expand(context, ref), node)
    assert context.worker["state"] == "idle", context.worker


class LongJob(threading.Thread):
    """A 2048-token task read to its end on a thread; `first_token` once one came."""

    def __init__(self, context: Context, body: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.context, self.body = context, body
        self.first_token = threading.Event()
        self.events: list[dict[str, Any]] = []

    def run(self) -> None:
        with queen(self.context) as c, c.stream("POST", "/v2/tasks", json=self.body) as r:
            for line in r.iter_lines():
                self.events.extend(sse_events([line]))
                if self.events and self.events[-1]["type"] == "token":
                    self.first_token.set()


@given('a long job holds the only slot of the worker for {ref} on "{node}"')
def step_slot_held(context: Context, ref: str, node: str) -> None:
    worker = ensure_worker(context, expand(context, ref), node)
    # Greedy: the tiny model's text for this prompt runs on to max_tokens, no EOS.
    job = LongJob(context, task(expand(context, ref), node, max_tokens=2048, temperature=0))
    job.start()
    assert job.first_token.wait(60), "the long job produced no token"
    # Freeze the worker mid-generation: its slot stays taken for as long as the
    # scenario needs, however fast the tiny model is. (The supervisor's checks
    # are 30 s apart by default, longer than the keeper's 7 s of retries.)
    freeze(context, worker["pid"])
    time.sleep(0.2)
    assert not any(e["type"] == "end" for e in job.events), "the long job ended too soon"
    context.long_job, context.worker = job, worker


def freeze(context: Context, pid: int) -> None:
    """SIGSTOP a worker, with a SIGCONT after the scenario whatever happens."""
    os.kill(pid, signal.SIGSTOP)
    context.add_cleanup(thaw, pid)


def thaw(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass  # stopped with the queen already


@then("it retried after 1, 2 and 4 seconds first")
def step_retried(context: Context) -> None:
    err = context.result.stderr
    retries = re.findall(r"retrying in (\d+) s", err)
    assert retries == ["1", "2", "4"], err
    assert context.result.total_s >= 7, context.result.total_s


@then("the long job still finishes once its worker runs again")
def step_long_job_finishes(context: Context) -> None:
    thaw(context.worker["pid"])
    context.long_job.join(60)
    assert not context.long_job.is_alive(), "the long job never finished"
    end = context.long_job.events[-2]
    assert end["type"] == "end" and end["tokens_out"] == 2048, end


# --- cancellation and deadlines ------------------------------------------------------


@when("a client starts a 2048-token task and leaves after the first tokens")
def step_client_leaves(context: Context) -> None:
    body = task(f"file:{context.model_dir}", "local", max_tokens=2048, temperature=0)
    tokens = 0
    with queen(context) as c, c.stream("POST", "/v2/tasks", json=body) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            tokens += line.startswith('data: {"type": "token"')
            if tokens == 5:
                break  # leaving the block closes the connection mid-stream
    assert tokens == 5


def job_ends(context: Context) -> list[tuple[str, str, int]]:
    """(job id, stop reason, tokens) of every job the worker finished, per its log."""
    deadline = time.monotonic() + 15
    while True:
        found = FINISHED.findall(worker_log(context, context.worker["worker_id"]))
        ends = [(job, reason, int(tokens)) for job, reason, tokens in found]
        if len(ends) >= 2 or time.monotonic() > deadline:  # the warm-up's, then this one's
            return ends
        time.sleep(0.1)


@then("the worker ends that job with stop reason CANCELLED well short of 2048 tokens")
def step_job_cancelled(context: Context) -> None:
    ends = job_ends(context)
    assert len(ends) == 2, ends
    _, reason, tokens = ends[-1]
    assert reason == "CANCELLED" and tokens < 1024, ends[-1]


@then("the worker is idle again and serves the next request")
def step_idle_again(context: Context) -> None:
    # A condition wait: on a loaded machine the thawed worker takes a while to
    # answer the health check that marks it idle again.
    deadline = time.monotonic() + 30
    while the_worker(context)["state"] != "idle" and time.monotonic() < deadline:
        time.sleep(0.05)
    worker = the_worker(context)
    assert worker["state"] == "idle", worker
    with queen(context) as c:
        # Greedy: sampled, the tiny model may end at EOS before its third token.
        body = task(f"file:{context.model_dir}", "local", max_tokens=3, temperature=0)
        r = c.post("/v2/tasks", json=body)
    assert r.status_code == 200, r.text
    events = sse_events(r.text.splitlines())
    assert events[-2]["tokens_out"] == 3, events[-3:]
    assert the_worker(context)["worker_id"] == context.worker["worker_id"], the_worker(context)


@when("the worker is frozen and I send a task whose deadline is {ms:d} ms away")
def step_deadline(context: Context, ms: int) -> None:
    # A frozen worker (SIGSTOP) cannot answer: the deadline passes while the queen
    # waits for it, however fast the machine is.
    freeze(context, context.worker["pid"])
    body = task(f"file:{context.model_dir}", "local", max_tokens=2048, temperature=0)
    at = str(int(time.time() * 1000) + ms)
    started = time.monotonic()
    with queen(context) as c:
        context.response = c.post("/v2/tasks", json=body, headers={"X-Request-Deadline": at})
    context.waited_s = time.monotonic() - started
    thaw(context.worker["pid"])


@then("the queen gave up at the deadline")
def step_gave_up(context: Context) -> None:
    assert context.waited_s < 5, context.waited_s


@then("the worker refused the late request instead of running it")
def step_worker_refused(context: Context) -> None:
    # The request reaches the thawed worker with its deadline already past: no job
    # starts (only the warm-up's is in its log), and nothing holds its slot.
    time.sleep(0.5)
    log = worker_log(context, context.worker["worker_id"])
    assert len(re.findall(r"job \S+ cid=\S+ started:", log)) == 1, log


# --- body size ---------------------------------------------------------------------


@when("I post a {mb:g} MB prompt to /v2/tasks")
def step_big_body(context: Context, mb: float) -> None:
    body = task(f"file:{context.model_dir}", "local", max_tokens=2)
    body["prompt"] = "a" * int(mb * 1_000_000)
    with queen(context) as c:
        context.response = c.post("/v2/tasks", json=body)


@then("the answer is HTTP {status:d} with error {code} and a correlation id")
def step_http_error(context: Context, status: int, code: str) -> None:
    r = context.response
    assert r.status_code == status, (r.status_code, r.text[:300])
    error = r.json()["error"]
    assert error["code"] == code, error
    assert error["correlation_id"] and error["correlation_id"] == r.headers["x-correlation-id"]
    assert "\n" not in error["message"]


@then("no worker was started")
def step_no_worker(context: Context) -> None:
    with queen(context) as c:
        assert c.get("/v2/workers/list").json()["workers"] == []


# --- the OpenAI stream ----------------------------------------------------------------


@given('the model "{name}" in the catalog, served on "{node}" with a chat template')
def step_chat_model(context: Context, name: str, node: str) -> None:
    folder = context.home / "chat-model"
    shutil.copytree(context.model_dir, folder)
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    entry = {"name": name, "model_ref": f"file:{folder}", "nodes": [node]}
    with queen(context) as c:
        r = c.post("/v2/registry/models/add", json=entry)
    assert r.status_code in (200, 201), r.text


@when('I stream a chat completion from "{name}" with at most {count:d} tokens')
def step_chat_stream(context: Context, name: str, count: int) -> None:
    body = {
        "model": name,
        "messages": [{"role": "user", "content": "Tell me a story"}],
        "max_tokens": count,
        "temperature": 0,
        "stream_options": {"include_usage": True},
    }
    with queen(context) as c:
        with c.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
            assert r.status_code == 200, r.read()
            assert r.headers["content-type"].startswith("text/event-stream")
            context.chunks = sse_events(r.iter_lines())
        whole = c.post("/v1/chat/completions", json=body)
    assert whole.status_code == 200, whole.text
    context.whole = whole.json()
    context.max_tokens = count


@then("the chunks are chat.completion.chunk with the role first and text after")
def step_chunks(context: Context) -> None:
    chunks = [c for c in context.chunks if c.get("type") != "DONE"]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks), chunks[0]
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    texts = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert "".join(t for t in texts if t), "no text in the stream"


@then('the last chunk has finish_reason "{reason}", then usage, then [DONE]')
def step_last_chunk(context: Context, reason: str) -> None:
    *_, last, usage, done = context.chunks
    assert done == {"type": "DONE"}
    assert last["choices"][0]["finish_reason"] == reason, last
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == context.max_tokens


@then("the streamed text is the same as the non-streamed answer")
def step_same_as_whole(context: Context) -> None:
    streamed = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in context.chunks if c.get("choices")
    )
    assert streamed == context.whole["choices"][0]["message"]["content"]
    assert context.whole["usage"]["completion_tokens"] == context.max_tokens
