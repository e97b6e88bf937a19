"""`dynlaunch render k8s`: Kubernetes manifests (DynamoGraphDeployment or plain) from a config."""
