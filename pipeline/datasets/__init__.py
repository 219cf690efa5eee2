"""The data formats the stages read and write: MNIST's IDX files, the prepared split files, the fable's text
and vocabulary."""
