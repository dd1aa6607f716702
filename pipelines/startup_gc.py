"""Python's cyclic garbage collector while the ``batch-score`` process starts up.

Start-up imports Beam, TensorFlow and Keras: ~650k objects that live as long
as the process. While they are created, the collector's full passes walk all
of them again and again (six passes of 13-160 ms in a W1 run, plus the
young-generation ones). So the console script pauses the collector at launch
(:func:`pause`). Once the modules are imported, :func:`checkpoint` moves every
object alive into the permanent generation (:func:`gc.freeze`), where no
collection looks at them again. Just before the job runs, :func:`resume`
collects the garbage made since the last checkpoint (loading the model,
planning: ~1 ms in a W1 run), freezes what is left and starts the collector
again.

Only the console script pauses (its process exits when the command is done);
a program that calls a command's ``run()`` keeps its own collector settings.
Cyclic garbage left by the imports themselves is frozen with the modules and
never freed: ~35k small objects in a W1 run.
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


def checkpoint() -> None:
    """Freezes every object made so far (call after imports); a no-op unless paused."""
    if _paused:
        gc.freeze()


def resume() -> None:
    """Collects what was made since the last checkpoint, freezes the rest and restarts collection.

    A no-op unless :func:`pause` paused the collector.
    """
    global _paused
    if _paused:
        _paused = False
        gc.collect()
        gc.freeze()
        gc.enable()
