"""MNIST on disk: the four files, how they are read (:mod:`.mnist`) and fetched (:mod:`.download`)."""
