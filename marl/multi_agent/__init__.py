"""multi_agent"""
