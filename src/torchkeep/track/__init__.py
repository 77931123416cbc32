"""Trackers: where metrics go while a run trains. A Tracker has two methods: log and close.

JSONL is always on; TensorBoard (`torchkeep[track]`) and W&B (`torchkeep[wandb]`) are imported only
when a run asks for them.
"""

from torchkeep.track.base import Guarded, JsonlTracker, Tracker
from torchkeep.track.build import TrackConfig, build_trackers, close_trackers

__all__ = ["Guarded", "JsonlTracker", "TrackConfig", "Tracker", "build_trackers", "close_trackers"]
