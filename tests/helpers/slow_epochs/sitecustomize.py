"""On the PYTHONPATH of test_distributed's killed job only: each epoch's checkpoint write
is followed by a second's pause, so that the test's SIGTERM lands before the run finishes
on any CPU (a 3-epoch run of 200 images can otherwise finish between two polls)."""
import time

import tmkd_core.train as train

_atomic_save = train.atomic_save


def _save_then_pause(obj, path):
    written = _atomic_save(obj, path)
    time.sleep(1.0)
    return written


train.atomic_save = _save_then_pause
