"""The lab: four podman systemd hosts provisioned by playbooks/site.yml (see scripts/lab)."""
