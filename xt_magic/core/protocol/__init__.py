"""What the kernel, the backends and the runner share about a run: where its objects live
(``layout``), its state events (``events``), how a node reaches the store (``access``), and the
signed ticket with the launch secret that goes with it (``tickets``, ``keys``)."""
