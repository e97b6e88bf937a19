"""The test kit: helpers shared by tests/ and benchmarks/ that check dynlaunch from outside.

It imports nothing from `launcher`, so a check made with it does not go through the code it
checks: /proc scans (`procs`), a private etcd and raw reads over etcd's JSON gateway (`etcd`),
the keys Dynamo 1.x writes (`dynamo`), and waiting and port helpers (`net`).
"""
