"""Python's cyclic garbage collector while the ``batch-score`` process starts up.

Start-up imports Beam, TensorFlow and Keras and loads the model: ~450k
objects that live as long as the process. While they are created, the
collector's full passes walk all of them again and again (six passes of
20-160 ms in a W1 run, plus the young-generation ones). The console script
therefore pauses the collector at launch (:func:`pause`); once the command is
planned, just before its pipeline runs, :func:`resume` moves every object
alive then into the permanent generation (:func:`gc.freeze`) and starts the
collector again, so its passes during the job skip them.

Only the console script pauses (its process exits when the command is done);
a program that calls a command's ``run()`` keeps its own collector settings.
Cyclic garbage made during start-up is frozen with the rest and never freed:
~35k small objects in a W1 run.
"""

from __future__ import annotations

import gc

_paused = False


def pause() -> None:
    """Stops automatic collection until :func:`resume` (console script only)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """Freezes the objects start-up made and restarts collection; a no-op unless paused."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
