"""Containers: the image catalogue, resolving a job's `image:`, GPU pass-through and the
runtimes (bubblewrap, Apptainer, enroot/pyxis) that start a job's command inside an image.
See `docs/containers.md`."""
