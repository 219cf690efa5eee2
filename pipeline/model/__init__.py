"""The network and its numerics: the layers, how the classifier is built, saving and loading it, running it,
TensorFlow's kernels and threads pinned (numerics), and the deterministic matrix product with its C++ (detgemm,
native/)."""
