"""Ray runtime: client-shard actors, server-replica actors and the driver that joins the simulation to real compute."""
