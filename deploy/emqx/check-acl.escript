#!/usr/bin/env escript
%% Checks deploy/emqx/acl.conf: it must parse as EMQX reads it (Erlang terms, as
%% file:consult/1 reads them) and decide the cases below as intended, evaluated the way
%% EMQX 5's file authorizer does: rules top to bottom, first match wins, ${username} and
%% ${clientid} substituted in rule topics, {eq, T} an exact match, otherwise the
%% requested topic (or subscription filter) matched word by word against the rule's
%% filter, and no match denied (authorization.no_match = deny in emqx.conf).
%%
%% Usage: escript deploy/emqx/check-acl.escript [deploy/emqx/acl.conf]
%% Prints every case; exits 1 if the file does not parse or any case is decided wrong.
-mode(compile).

cases() ->
    S = "lockerfleet-server",
    [%% The server reads every cabinet through its shared group, writes every down topic.
     {S, subscribe, "$share/fleet/lf/v1/cab/+/up", allow},
     {S, subscribe, "$share/fleet/lf/v1/cab/+/presence", allow},
     {S, subscribe, "lf/v1/cab/+/up", allow},
     {S, subscribe, "lf/v1/courier/+/assignments", allow},
     {S, publish, "lf/v1/cab/cab-a/down", allow},
     {S, publish, "lf/v1/courier/k-1/assignments", allow},
     {S, publish, "elsewhere/topic", deny},
     %% A cabinet: its own up and presence, its own down, nothing else.
     {"cab-a", publish, "lf/v1/cab/cab-a/up", allow},
     {"cab-a", publish, "lf/v1/cab/cab-a/presence", allow},
     {"cab-a", subscribe, "lf/v1/cab/cab-a/down", allow},
     {"cab-a", publish, "lf/v1/cab/cab-b/up", deny},
     {"cab-a", publish, "lf/v1/cab/cab-b/presence", deny},
     {"cab-a", publish, "lf/v1/cab/cab-a/down", deny},
     {"cab-a", publish, "lf/v1/cab/cab-b/down", deny},
     {"cab-a", subscribe, "lf/v1/cab/cab-b/down", deny},
     {"cab-a", subscribe, "lf/v1/cab/+/down", deny},
     {"cab-a", subscribe, "lf/v1/cab/#", deny},
     {"cab-a", subscribe, "#", deny},
     {"cab-a", subscribe, "lf/v1/cab/cab-a/up", deny},
     {"cab-a", subscribe, "$share/x/lf/v1/cab/+/up", deny},
     {"cab-a", subscribe, "lf/v1/courier/k-1/assignments", deny},
     %% A courier: its own assignments, read only.
     {"k-1", subscribe, "lf/v1/courier/k-1/assignments", allow},
     {"k-1", subscribe, "lf/v1/courier/k-2/assignments", deny},
     {"k-1", subscribe, "lf/v1/courier/+/assignments", deny},
     {"k-1", publish, "lf/v1/courier/k-1/assignments", deny},
     {"k-1", publish, "lf/v1/cab/cab-a/up", deny}].

main(Args) ->
    Default = filename:join(filename:dirname(escript:script_name()), "acl.conf"),
    File = case Args of [F] -> F; [] -> Default end,
    case file:consult(File) of
        {ok, Rules} ->
            Bad = [C || C <- cases(), not check(Rules, C)],
            io:format("~s: ~b rules, ~b cases, ~b decided wrong~n",
                      [File, length(Rules), length(cases()), length(Bad)]),
            halt(case Bad of [] -> 0; _ -> 1 end);
        {error, Reason} ->
            io:format("~s does not parse: ~s~n", [File, file:format_error(Reason)]),
            halt(1)
    end.

check(Rules, {User, Action, Topic, Want}) ->
    Got = decide(Rules, #{username => User, clientid => User ++ "-client"}, Action, Topic),
    Mark = case Got of Want -> "ok  "; _ -> "FAIL" end,
    io:format("~s ~-20s ~-9s ~-40s ~s (want ~s)~n", [Mark, User, Action, Topic, Got, Want]),
    Got =:= Want.

decide([], _Client, _Action, _Topic) -> deny;
decide([{Perm, all} | _], _Client, _Action, _Topic) -> Perm;
decide([{Perm, Who, RuleAction, Topics} | Rest], Client, Action, Topic) ->
    case who(Who, Client) andalso action(RuleAction, Action)
         andalso lists:any(fun(T) -> topic(T, Client, Topic) end, Topics) of
        true -> Perm;
        false -> decide(Rest, Client, Action, Topic)
    end;
decide([Other | _], _Client, _Action, _Topic) ->
    io:format("unknown rule form: ~p~n", [Other]),
    halt(1).

who(all, _) -> true;
who({Key, {re, Re}}, C) when Key =:= username; Key =:= user ->
    re:run(maps:get(username, C), Re) =/= nomatch;
who({Key, {re, Re}}, C) when Key =:= clientid; Key =:= client ->
    re:run(maps:get(clientid, C), Re) =/= nomatch;
who({Key, Name}, C) when Key =:= username; Key =:= user -> maps:get(username, C) =:= Name;
who({Key, Name}, C) when Key =:= clientid; Key =:= client -> maps:get(clientid, C) =:= Name;
who({'and', L}, C) -> lists:all(fun(W) -> who(W, C) end, L);
who({'or', L}, C) -> lists:any(fun(W) -> who(W, C) end, L);
who(Other, _) -> io:format("unknown client matcher: ~p~n", [Other]), halt(1).

action(all, _) -> true;
action({A, _Opts}, A) -> true;
action(A, A) -> true;
action(_, _) -> false.

topic({eq, T}, _C, Topic) -> T =:= Topic;
topic(Filter, C, Topic) ->
    F1 = string:replace(Filter, "${username}", maps:get(username, C), all),
    F2 = string:replace(F1, "${clientid}", maps:get(clientid, C), all),
    match(string:split(Topic, "/", all), string:split(lists:flatten(F2), "/", all)).

%% Requested words against rule words: only the rule's wildcards expand.
match(_, ["#"]) -> true;
match([], []) -> true;
match([_ | T], ["+" | F]) -> match(T, F);
match([W | T], [W | F]) -> match(T, F);
match(_, _) -> false.
