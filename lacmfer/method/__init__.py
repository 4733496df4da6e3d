"""The method: network and trunk weights, losses, adaptation methods, validators, schedules."""
