module spanprog

go 1.23
