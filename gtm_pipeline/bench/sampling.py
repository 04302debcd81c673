"""Peak resident memory: of a child's process tree, sampled from the parent, and of this process, per stage."""

from __future__ import annotations

import os
import threading

from gtm_pipeline.bench.config import SAMPLE_SECONDS


class TreeSampler:
    """Peak resident memory of a process and its descendants, sampled in a thread every SAMPLE_SECONDS."""

    def __init__(self, pid: int):
        import psutil

        self._proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self._proc, *self._proc.children(recursive=True)]
                rss = 0
                for p in procs:
                    try:
                        rss += p.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak = max(self.peak, rss)
            except psutil.Error:
                return
            self._stop.wait(SAMPLE_SECONDS)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class SelfSampler(TreeSampler):
    """Peak RSS of this process, resettable per stage."""

    def __init__(self):
        super().__init__(os.getpid())

    def reset(self) -> int:
        peak, self.peak = self.peak, 0
        return peak


def ru_maxrss() -> int:
    """This process's own peak resident memory in bytes (the kernel's figure; ``ru_maxrss`` is KiB on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
