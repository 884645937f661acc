"""Training data: sources (arrays, token files, CIFAR folders, image trees, text files), the batches a task
makes of them, and the resumable order they are read in. Heavy libraries (Pillow, datasets, tokenizers) are
imported only by the source that needs them."""
