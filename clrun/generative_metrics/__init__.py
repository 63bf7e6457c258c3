"""How good a generator's samples are: FID, precision and recall in a locally trained feature
space, per task after every task, and sample grids. Inception weights cannot be downloaded, so
every data set gets a small classifier trained once on its training split and cached."""
