module allocprog

go 1.23
