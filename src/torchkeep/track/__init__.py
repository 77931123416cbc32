"""Trackers: where metrics go while a run trains. A Tracker has two methods: log and close."""

from torchkeep.track.base import JsonlTracker, Tracker

__all__ = ["JsonlTracker", "Tracker"]
