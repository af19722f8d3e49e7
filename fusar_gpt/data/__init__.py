"""Data: synthetic world, annotations, tasks, dataset building and batches."""
