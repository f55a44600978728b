"""The worker's GPU options: which device, a split over several GPUs, the cache reserve."""

from __future__ import annotations

import argparse

MAX_GPUS = 16


def add_gpu_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gpu-split",
        metavar="GB,GB,...",
        help="exllamav2: spread the weights over several GPUs, GB per GPU in order "
        "(e.g. 20,24); --device is then ignored",
    )
    parser.add_argument(
        "--cache-reserve-mb",
        type=int,
        metavar="MIB",
        help="exllamav2: VRAM left free after the weights and the KV cache, for "
        "activations (default 1024); the cache takes the rest",
    )


def default_device(backend: str) -> str:
    return "cuda" if backend == "exllamav2" else "cpu"


def check_gpu_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Validate and normalise in place; `parser.error` (exit 2) on bad input."""
    if args.device is None:
        args.device = default_device(args.backend)
    if args.backend != "exllamav2" and (
        args.gpu_split is not None or args.cache_reserve_mb is not None
    ):
        parser.error("--gpu-split and --cache-reserve-mb need --backend exllamav2")
    if args.cache_reserve_mb is not None and not 0 <= args.cache_reserve_mb <= 1024 * 1024:
        parser.error("--cache-reserve-mb must be 0..1048576")
    if args.gpu_split is not None:
        args.gpu_split = parse_gpu_split(parser, args.gpu_split)


def parse_gpu_split(parser: argparse.ArgumentParser, text: str) -> list[float]:
    parts = text.split(",")
    try:
        split = [float(p) for p in parts]
    except ValueError:
        parser.error("--gpu-split must be numbers of GB separated by commas, e.g. 20,24")
    if not 1 <= len(split) <= MAX_GPUS or not all(0 < gb <= 4096 for gb in split):
        parser.error(f"--gpu-split takes 1..{MAX_GPUS} sizes, each above 0 and at most 4096 GB")
    return split
