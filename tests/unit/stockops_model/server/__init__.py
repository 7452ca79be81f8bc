"""Tests of the scoring server (a package so its tests can import the shared fakes)."""
