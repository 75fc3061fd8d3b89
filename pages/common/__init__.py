"""Helpers the pages share (not pages themselves): the store and job manager of this server, the chosen
run, the dataset picker and forms, the charts' controls, galleries, Compare."""
