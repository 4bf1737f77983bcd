"""Where finder commands run: local processes, containers, Slurm, Kubernetes."""
