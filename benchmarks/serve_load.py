"""Load test of ``stackgan2 serve`` on 127.0.0.1, printed as JSON.

In one run, on the same model and device:

- ``pipeline``: ``Text2ImagePipeline`` alone in this process at ``--n``-image calls and at batch
  ``--max-batch`` (images/s including the tensor -> PIL conversion), and the bare generator forward
  at 1, 4 and ``--max-batch`` rows (what one-row forwards, the CPU rule, cost against batching);
- ``batched``: the server (``stackgan2 serve --max-batch M``, a subprocess) under ``--clients`` concurrent
  clients for ``--seconds``: requests/s, images/s, p50/p99 latency and errors;
- ``one_at_a_time``: the same with ``--max-batch 1`` (each forward serves one request);
- ``memory``: a fresh batched server under ``--memory-clients`` clients for ``--memory-requests`` requests,
  its peak RSS (VmHWM) after a warm-up and again after those requests, and their errors;
- ``serving_vs_pipeline``: batched images/s over the pipeline's images/s at batch ``--max-batch``.

Each client keeps one HTTP/1.1 connection and sends ``{"prompt", "n", "seed"}`` (a new seed each time,
the final branch, JSON with base64 PNGs) as soon as its previous answer arrived. Clients run as
threads in this process, so on a one-core run their work counts against the server's.

    python benchmarks/serve_load.py [--model DIR] [--device cpu] [--clients 16] [--seconds 20]
        [--max-batch 16] [--n 1] [--memory-clients 32] [--memory-requests 1000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

from stackgan2.device import resolve_device
from stackgan2.pipeline import Text2ImagePipeline, default_model

PROMPTS = [
    "a small red bird with black wings",
    "a large blue bird with a short yellow beak",
    "a yellow bird with grey wings perched on a branch",
    "a green bird flying in the sky",
]


class Server:
    """``stackgan2 serve`` as a subprocess on a free port; ``vm(...)`` reads its /proc status in kB."""

    def __init__(self, model: Path | None, device: str, max_batch: int) -> None:
        command = [sys.executable, "-m", "stackgan2.cli", "serve", "--port", "0", "--device", device, "--max-batch", str(max_batch)]
        if model is not None:
            command += ["--model", str(model)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.process.stdout.readline()
        match = re.search(r"at http://127\.0\.0\.1:(\d+)/", line)
        if not match:
            self.process.kill()
            raise SystemExit(f"the server did not start: {line}{self.process.stdout.read()}")
        self.port = int(match.group(1))

    def cpu_s(self) -> float:
        """User + system CPU seconds the server has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def vm(self, field: str) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(rf"^{field}:\s+(\d+) kB", status, re.M).group(1))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def drive(port: int, clients: int, n: int, seconds: float | None = None, requests: int | None = None) -> dict[str, Any]:
    """``clients`` closed-loop clients until ``seconds`` pass or ``requests`` answers came back."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(10**9))
    start = time.perf_counter()

    claimed = [0]  # requests sent and not answered yet

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        while True:
            with lock:
                if not (len(latencies) + len(errors) + claimed[0] < requests if requests is not None
                        else time.perf_counter() - start < seconds):
                    break
                claimed[0] += 1
                i = next(counter)
            body = json.dumps({"prompt": PROMPTS[i % len(PROMPTS)], "n": n, "seed": 1000 + i})
            sent = time.perf_counter()
            try:
                connection.request("POST", "/v1/images", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                payload = response.read()
                ok = response.status == 200 and b'"images"' in payload
                problem = None if ok else f"{response.status}: {payload[:200]!r}"
            except (OSError, http.client.HTTPException) as exc:
                problem = repr(exc)
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            with lock:
                claimed[0] -= 1
                (errors.append(problem) if problem else latencies.append(time.perf_counter() - sent))
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    ordered = sorted(latencies) or [float("nan")]
    return {
        "clients": clients,
        "images_per_request": n,
        "seconds": round(elapsed, 2),
        "requests": len(latencies),
        "errors": len(errors),
        "first_errors": errors[:3],
        "requests_per_s": round(len(latencies) / elapsed, 2),
        "images_per_s": round(len(latencies) * n / elapsed, 2),
        "latency_p50_ms": round(1000 * statistics.median(ordered), 1),
        "latency_p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1),
    }


def serve_and_drive(model: Path | None, device: str, max_batch: int, clients: int, n: int, seconds: float) -> dict[str, Any]:
    server = Server(model, device, max_batch)
    try:
        drive(server.port, clients, n, requests=2 * clients)  # warm-up: allocator, first forwards
        cpu = server.cpu_s()
        result = drive(server.port, clients, n, seconds=seconds)
        # below ~0.95 on a one-core run: something else took the core (the clients' share is ~1 %)
        result["server_cpu_per_wall_s"] = round((server.cpu_s() - cpu) / result["seconds"], 3)
    finally:
        server.stop()
    return {"max_batch": max_batch, **result}


def pipeline_reference(model: Path, device: str, n: int, batch: int, seconds: float) -> dict[str, Any]:
    pipe = Text2ImagePipeline.from_pretrained(model, device=resolve_device(device))

    def images_per_s(count: int) -> float:
        pipe(PROMPTS[0], num_images_per_prompt=count, seed=0, batch_size=batch)  # warm-up
        done, start, seed = 0, time.perf_counter(), 0
        while time.perf_counter() - start < seconds / 2:
            pipe(PROMPTS[seed % len(PROMPTS)], num_images_per_prompt=count, seed=seed, batch_size=batch)
            done, seed = done + count, seed + count
        return round(done / (time.perf_counter() - start), 2)

    cfg = pipe.config.model
    forward_ms = {}
    with torch.inference_mode():
        for rows in sorted({1, 4, batch}):
            z, eps = torch.randn(rows, cfg.z_dim, device=pipe.device), torch.randn(rows, cfg.eps_dim, device=pipe.device)
            emb = torch.randn(rows, cfg.text_dim, device=pipe.device)
            pipe.generator(z, emb, eps)
            start = time.perf_counter()
            for _ in range(5):
                pipe.generator(z, emb, eps)
            if pipe.device.type == "cuda":
                torch.cuda.synchronize()
            forward_ms[str(rows)] = round((time.perf_counter() - start) / 5 * 1000, 2)
    return {
        f"images_per_s_at_batch_{batch}": images_per_s(batch),
        f"images_per_s_at_{n}_per_call": images_per_s(n),
        "generator_forward_ms_by_rows": forward_ms,
    }


def memory(model: Path | None, device: str, max_batch: int, clients: int, n: int, requests: int) -> dict[str, Any]:
    server = Server(model, device, max_batch)
    try:
        drive(server.port, clients, n, requests=2 * clients)
        before = server.vm("VmHWM")
        result = drive(server.port, clients, n, requests=requests)
        after = server.vm("VmHWM")
        rss = server.vm("VmRSS")
    finally:
        server.stop()
    return {**result, "peak_rss_mib_before": round(before / 1024, 1), "peak_rss_mib_after": round(after / 1024, 1),
            "rss_mib_at_end": round(rss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="model to serve (default: the shipped toy-birds model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured time of each load phase")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--n", type=int, default=1, help="images per request")
    parser.add_argument("--memory-clients", type=int, default=32)
    parser.add_argument("--memory-requests", type=int, default=1000)
    args = parser.parse_args()
    model = args.model if args.model is not None else default_model()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))

    report: dict[str, Any] = {
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "model": model.name,
        "pipeline": pipeline_reference(model, args.device, args.n, args.max_batch, args.seconds),
    }
    served = args.model  # None: the server's own default (the shipped model)
    report["batched"] = serve_and_drive(served, args.device, args.max_batch, args.clients, args.n, args.seconds)
    report["one_at_a_time"] = serve_and_drive(served, args.device, 1, args.clients, args.n, args.seconds)
    report["memory"] = memory(served, args.device, args.max_batch, args.memory_clients, args.n, args.memory_requests)
    reference = report["pipeline"][f"images_per_s_at_batch_{args.max_batch}"]
    report["serving_vs_pipeline"] = round(report["batched"]["images_per_s"] / reference, 3)
    report["batched_vs_one_at_a_time"] = round(
        report["batched"]["images_per_s"] / max(report["one_at_a_time"]["images_per_s"], 1e-9), 3
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
