"""How the bridge node reaches a site: paramiko or OpenSSH over SSH, or a local child process."""
