-- Read only. ARGV: 3 group. Returns its counts and settings (`group_stats`).
return group_stats(KEY, ARGV[3])
