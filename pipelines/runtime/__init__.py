"""What every training loop shares, whatever the model family: the training config, errors that
cross Ray intact, early stopping, planted failures, process groups and devices."""
