"""Interactive sessions in running jobs (`kaic exec`, `shell`, `forward`): the registry of open
sessions (`registry`) and the bridges between a WebSocket and a session's process or
connection (`bridge`). The routes are `kaic.center.routers.interactive`; what runs inside a
job is the executor's (`Executor.exec`, `Executor.connect`)."""
