"""Two classic TensorFlow LSTM tutorials (MNIST row by row, Belling the Cat) as one DVC + MLflow pipeline."""
