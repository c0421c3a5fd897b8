"""Lua scripts that make each bus step atomic.

COMMIT_MANY applies the effects of a batch of messages and acknowledges them, one message at a
time on its own idempotency key: if the key is new (SET NX) the message's effects run and its
result is 1; if it exists (the message was already committed, e.g. by a peer that reclaimed it)
only its XACK runs and its result is 0. Either way a step never half-happens. ``XADDIFLEN`` sends only once a hash has
enough fields (the reward worker: "the last member of a group asks for scoring"), decided
inside the same atomic step so two workers committing the last two members cannot both miss.
``XADDN`` is an XADD with its own ``MAXLEN ~`` cap (episode logs, the results and learner
streams: bounded memory however long the run).
"""

#: One script call for a whole batch (instead of one per message) saves the per-command cost.
#: KEYS: the epoch key first, then every key the items name. ARGV[1] group, ARGV[2] idempotency
#: TTL (ms), ARGV[3] MAXLEN cap, ARGV[4] the epoch the caller read its messages in, then per
#: item: idempotency key index, input stream key index, entry id, number of effects, and the
#: effects (op, key index, n args, args...). Returns one 1/0 per item.
#: A wrong epoch (the server lost its data since: work read before a crash) applies nothing.
COMMIT_MANY = """
if redis.call('GET', KEYS[1]) ~= ARGV[4] then
  return redis.error_reply('USERRL_EPOCH the server lost its data since this work was read')
end
local out = {}
local i = 5
local n = #ARGV
while i <= n do
  local idem = KEYS[tonumber(ARGV[i])]
  local stream = KEYS[tonumber(ARGV[i + 1])]
  local entry = ARGV[i + 2]
  local nops = tonumber(ARGV[i + 3])
  i = i + 4
  local fresh = redis.call('SET', idem, entry ~= '' and entry or '1', 'NX', 'PX', ARGV[2])
  for _ = 1, nops do
    local op = ARGV[i]
    local key = KEYS[tonumber(ARGV[i + 1])]
    local nargs = tonumber(ARGV[i + 2])
    if fresh then
      local args = {}
      for j = 1, nargs do args[j] = ARGV[i + 2 + j] end
      if op == 'XADD' then
        redis.call('XADD', key, 'MAXLEN', '~', ARGV[3], '*', unpack(args))
      elseif op == 'XADDN' then
        redis.call('XADD', key, 'MAXLEN', '~', args[1], '*', unpack(args, 2))
      elseif op == 'XADDIFLEN' then
        if redis.call('HLEN', KEYS[tonumber(args[1])]) >= tonumber(args[2]) then
          redis.call('XADD', key, 'MAXLEN', '~', ARGV[3], '*', unpack(args, 3))
        end
      elseif op == 'HSET' or op == 'ZADD' or op == 'ZREM' or op == 'PEXPIRE' or op == 'DEL' or op == 'HINCRBY' then
        redis.call(op, key, unpack(args))
      else
        return redis.error_reply('userrl commit: unknown effect ' .. tostring(op))
      end
    end
    i = i + 3 + nargs
  end
  if entry ~= '' then redis.call('XACK', stream, ARGV[1], entry) end
  out[#out + 1] = fresh and 1 or 0
end
return out
"""

#: Renew a claim only if this consumer still owns the entry (never steal it back from a peer).
#: KEYS[1] stream; ARGV[1] group, ARGV[2] consumer, ARGV[3..] entry ids. Returns ids renewed.
RENEW = """
local renewed = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #p == 1 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    table.insert(renewed, ARGV[i])
  end
end
return renewed
"""

#: Move an entry to the dead-letter stream and ack it, atomically.
#: KEYS[1] source stream, KEYS[2] dead stream; ARGV[1] group, ARGV[2] entry id,
#: ARGV[3] MAXLEN cap, ARGV[4..] fields of the dead-letter entry.
DEAD_LETTER = """
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(fields))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return id
"""

#: Keep only the newest ARGV[1] members of a sorted set (by score) and drop the removed members
#: from a companion hash too (``groups:done`` is capped through ``groups:done:at``).
#: KEYS[1] sorted set, KEYS[2] hash ('' none). Returns how many were removed.
CAP_INDEX = """
local extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[1])
if extra <= 0 then return 0 end
local old = redis.call('ZRANGE', KEYS[1], 0, extra - 1)
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, extra - 1)
if #KEYS > 1 then
  for i = 1, #old, 1000 do
    redis.call('HDEL', KEYS[2], unpack(old, i, math.min(i + 999, #old)))
  end
end
return #old
"""

#: Remove and return the oldest members of a sorted set beyond the newest ARGV[1], at most
#: ARGV[2] per call (the caller deletes what they index, e.g. finished episodes' logs).
#: KEYS[1] sorted set.
POP_OLDEST = """
local extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[1])
if extra <= 0 then return {} end
extra = math.min(extra, tonumber(ARGV[2]))
local old = redis.call('ZRANGE', KEYS[1], 0, extra - 1)
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, extra - 1)
return old
"""
