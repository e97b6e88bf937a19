"""dynlaunch: launch and supervise Dynamo + SGLang (or mocker) serving stacks."""

__version__ = "0.1.0"
