"""The split names of the training-set table: one spelling shared by the feature store that writes them and
the training code that reads them."""

from __future__ import annotations

# Time splits over mature rows: train is oldest, test newest.
SPLITS = ("train", "validation", "test")
# Frauds confirmed before their transaction matured (TrainingSetSpec.early_frauds): training rows only. They
# have no legitimate neighbours of their own days yet, so they cannot judge a model and stay out of the splits
# the gates read.
EARLY_SPLIT = "early"
ALL_SPLITS = (*SPLITS, EARLY_SPLIT)
