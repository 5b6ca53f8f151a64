"""The xt_magic core: config, auth, jobs, compute, storage. Never imports IPython or ipywidgets."""
