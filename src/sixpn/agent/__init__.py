"""The host agent: joins, follows the fleet, keeps its data path and DNS as they should be."""
