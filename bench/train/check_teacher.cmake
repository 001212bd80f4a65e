# Runs teacher_fashion_mnist with the recorded recipe and checks the quality target:
# top-1 >= 0.85 on the Fashion-MNIST test split after <= 600 s of training.
# Usage: cmake -DPROGRAM=<path to teacher_fashion_mnist> -P check_teacher.cmake
execute_process(
  COMMAND "${PROGRAM}" --patch_size=4 --embed_dim=64 --depths=4 --num_heads=2 --drop_path=0
          --flip=false --batch_size=64 --lr=2e-3 --warmup_epochs=0.03 --budget_seconds=540
          --threads=2 --loader_workers=1
  OUTPUT_VARIABLE summary
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "teacher_fashion_mnist failed (${rc})")
endif()
string(JSON top1 GET "${summary}" top1)
string(JSON seconds GET "${summary}" train_seconds)
message(STATUS "top-1 ${top1} after ${seconds} s of training")
if(top1 LESS 0.85)
  message(FATAL_ERROR "top-1 ${top1} is below 0.85")
endif()
if(seconds GREATER 600)
  message(FATAL_ERROR "training took ${seconds} s, more than 600 s")
endif()
